"""The core of stages and operations: config, errors, the store and its cache, calendars, data-sized defaults."""
