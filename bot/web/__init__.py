"""quipfeed on the web: the HTTP API (FastAPI), the embeddable widget and a demo page.

`create_app(service, options)` builds the app over any `ChatService`; `BotChatService` is the
one over `bot.chat.Chat`. See README.md in this folder for the API and the widget.
"""

from bot.web.app import create_app
from bot.web.chat_adapter import BotChatService, counter_trending
from bot.web.options import WebOptions
from bot.web.service import ChatService

__all__ = ["BotChatService", "ChatService", "WebOptions", "counter_trending", "create_app"]
