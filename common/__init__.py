"""Shared by the NAS and the PC: home, config, logging, retry, calendar, store, strategy, queue, ops state."""
