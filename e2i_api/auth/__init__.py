"""UI login: OpenID Connect client, signed session cookies and roles (Caddy forward_auth)."""
