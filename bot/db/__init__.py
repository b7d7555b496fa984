"""Persistence: migrations (`bot.db.upgrade`) and one repository per table."""
