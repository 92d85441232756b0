"""HTTP transport: routers that translate requests into data/control plane calls and back."""
