"""Query builders, one module per analytics area. They take the session as a keyword
argument, run a small fixed number of aggregate queries and never commit."""
