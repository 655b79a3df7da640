"""Webhook delivery of segment changes: registrations, signatures, the delivering process."""
