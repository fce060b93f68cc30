"""Secrets from Vault (the only package that imports hvac)."""
