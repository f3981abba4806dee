"""Access tokens: the pure rules and hashing, and the shell that stores and serves them."""
