"""Legacy projects (SPEC §12–13): import of legacy exports, the legacy rules, and the migration assistant."""
