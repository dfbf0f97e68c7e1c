"""`make load`: a bounded load test through the local API Gateway-shaped endpoint."""
