"""Forward-auth for API gateways: nginx `auth_request`, Traefik ForwardAuth, Envoy `ext_authz`."""
