"""`make fuzz`: schemathesis against docs/openapi.json on the local endpoint."""
