"""Notifications: suppression (silences, maintenance, inhibition), webhook and email."""
