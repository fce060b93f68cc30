"""CNI networking for pods."""
