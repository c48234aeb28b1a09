"""Business logic shared by handlers (services/) and controllers (control/), which never import each other."""
