"""The console: the product's screens (Admin Center, personal settings), server-rendered from
the services the management API uses, signed in with the consent screen's login."""
