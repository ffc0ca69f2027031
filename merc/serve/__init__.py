"""``merc serve``: the HTTP API, live streaming over a WebSocket and the web page (imports inference only)."""
