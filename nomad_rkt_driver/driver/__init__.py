"""The driver: Nomad's DriverPlugin methods in domain types, composing the service packages."""
