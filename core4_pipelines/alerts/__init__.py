"""Alerts: the operator told, by e-mail or webhook, when files go to error, a batch fails for
good, a run turns zombie or a collection stops receiving data (see docs/alerts.md)."""
