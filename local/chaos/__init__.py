"""`make chaos`: the router's failure scenarios through the local endpoint, each with its assertions."""
