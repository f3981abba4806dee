"""Client applications of a service, with their requestable scopes."""
