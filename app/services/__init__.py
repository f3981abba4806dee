"""Services: the tenants of the store, with their scopes and durations."""
