"""The example platform file with a guardrail and a feature that names it (tests of stacks/constructs/guardrail.py)."""

from __future__ import annotations

from typing import Any

from tests.infra.config_documents import example

GUARDRAIL = "support-safety"
GUARDED_FEATURE = "answer-customer"
GUARDED_REGION = "us-east-1"


def guarded_example() -> dict[str, Any]:
    """config/platform.yaml plus one guardrail and an on-demand feature in us-east-1 that Bedrock guards with it."""
    document = example()
    document["guardrails"] = {
        GUARDRAIL: {
            "blocked_input_message": "This request cannot be answered.",
            "blocked_output_message": "This answer was withheld.",
            "content_filters": {"HATE": "HIGH", "INSULTS": "MEDIUM", "PROMPT_ATTACK": "HIGH"},
            "denied_topics": [
                {"name": "Investment advice", "definition": "Recommendations on securities.", "examples": ["Buy X?"]}
            ],
            "words": ["competitor-codename"],
            "managed_word_lists": ["PROFANITY"],
            "sensitive_information": {"EMAIL": "ANONYMIZE", "US_SOCIAL_SECURITY_NUMBER": "BLOCK"},
        }
    }
    document["features"][GUARDED_FEATURE] = {
        "first_capacity": "on_demand",
        "models": ["claude-sonnet", "nova-lite"],
        "home_region": GUARDED_REGION,
        "deadline_ms": 20000,
        "converse": {"guardrail": GUARDRAIL},
    }
    return document
