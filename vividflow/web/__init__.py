"""The web app at ``/``: accounts, API keys, generation with live progress, history and prompt
enhancement, as server-rendered pages on the same service layer as the API (``/api/v1``).

Pages are Jinja2 templates with a little plain JavaScript (``static/js``), no build step and no
CDN; every page also works without JavaScript.
"""
