"""Stage one: datasets -> clips -> frames -> frozen backbone -> feature cache."""
