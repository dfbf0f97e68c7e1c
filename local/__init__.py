"""The local world: everything that runs Spillway on loopback with no AWS account.

The product is ``stacks/`` and ``lambdas/``; this package is what exercises it here: the emulator of Bedrock and
SageMaker (``emulator``), the Lambda-shaped fleet and one-process worlds (``localrun``), and the suites that drive
them (``demo``, ``chaos``, ``load``, ``fuzz``, ``benchmarks``).
"""
