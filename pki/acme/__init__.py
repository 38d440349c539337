"""ACME (RFC 8555) protocol pieces that need no database: problem documents, JWS, challenges."""
