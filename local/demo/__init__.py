"""`make demo`: the example platform on loopback through a steady load, a surge, and a home-region outage."""
