"""The widget's messages: every problem a napari notification and the status line, never a traceback dialog."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from napari.utils.notifications import show_error, show_info, show_warning

from gmiseg_edge.core.errors import GmisegError
from gmiseg_edge.viewer.tasks import Outcome
from gmiseg_edge.viewer.widget.state import WidgetState

log = logging.getLogger(__name__)


class MessagesMixin(WidgetState):
    """Notifications, guarded UI actions and the report of a job's failure or cancel."""

    def notify(self, level: str, text: str) -> None:
        """A napari notification (and the status line); never a traceback dialog."""
        self.messages.append((level, text))
        self.status.setText(text)
        {"error": show_error, "warning": show_warning}.get(level, show_info)(text)

    def _guarded(self, action: Callable[[], Any]) -> Any:
        """Run a UI action; a problem becomes a notification, nothing half-done is kept."""
        try:
            return action()
        except (GmisegError, ValueError, OSError) as exc:
            self.notify("error", str(exc))
        except Exception as exc:  # a bug: a message for the user, the traceback in the log
            log.exception("viewer action failed")
            self.notify("error", f"{type(exc).__name__}: {exc}")
        return None

    def _report_outcome(self, what: str, outcome: Outcome) -> bool:
        """Notify a failed or cancelled job; True when there is no result to use."""
        if outcome.cancelled:
            self.notify("info", f"{what} cancelled; the Labels layer is unchanged")
            return True
        if outcome.error is not None:
            self.notify("error", f"{what} failed: {outcome.error}")
            return True
        return False
