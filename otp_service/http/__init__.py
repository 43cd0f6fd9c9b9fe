"""The HTTP face: the aiohttp app, its middlewares and handlers, the inbox page."""
