"""Tessera: OAuth2 authorization and token-lifecycle service."""
