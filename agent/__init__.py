"""`keyward agent`: a client of the GraphQL API keeping certificates on a host; no database access."""
