"""Single sign-on: people sign in with the company's OpenID Connect provider, access follows their groups.

- ``provider.py``: the provider's discovery document and signing keys (refetched when it rotates them),
  token verification with joserfc and the authorization-code flow with PKCE through Authlib.
- ``groups.py``: which collections (and role) each identity-provider group grants: ``kb groups map``.
- ``sessions.py``: server-side web sessions and the logins in progress, in the shared database.

A user becomes the same ``Principal`` an API key gives (``app.auth``), so the collection ACL, the
answer cache's scope, audit rows and the usage ledger treat both alike; the user's identity is
"name (sso:subject)" where a key's is its name.
"""
