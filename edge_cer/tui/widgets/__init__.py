"""Widgets of the session screen: they show state and post what the participant did, never call the session."""
