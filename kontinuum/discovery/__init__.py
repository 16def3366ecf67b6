"""Sources of service discovery (static files, Kubernetes, DNS) and their aggregation."""
