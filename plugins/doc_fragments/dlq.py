# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """The dead-letter table and its outbox (plugins/module_utils/_dlq.py dlq_argument_spec)."""

    DOCUMENTATION = r"""
options:
  table:
    description:
      - The dead-letter table, optionally schema-qualified (V(dlq.failed_events)).
      - Names are checked (letters, digits, V(_), V($)) and double-quoted; a missing table fails
        with its name and the database.
    type: str
    default: failed_events
  columns:
    description:
      - Column names of O(table) where they differ from the platform's defaults. A wrong name
        fails before anything runs, listing the table's columns.
    type: dict
    default: {}
    suboptions:
      id:
        description: Row id (an increasing integer); the baseline and batches use it.
        type: str
        default: id
      event_id:
        description: Id of the event; replay publishes it as the C(Nats-Msg-Id) header.
        type: str
        default: event_id
      subject:
        description: NATS subject of the event.
        type: str
        default: subject
      tenant_id:
        description: Tenant of the event.
        type: str
        default: tenant_id
      envelope:
        description: The event as JSON (C(jsonb), C(json) or C(text)); replay publishes it.
        type: str
        default: envelope_json
      error:
        description: Why the event failed.
        type: str
        default: error
      retry_count:
        description: Deliveries before the event was given up.
        type: str
        default: retry_count
      failed_at:
        description: When the event was given up (C(timestamptz)).
        type: str
        default: failed_at
  outbox_table:
    description:
      - The outbox of events not yet published. An empty string skips it; a table that does not
        exist gives a null count.
    type: str
    default: events_outbox
  outbox_published_column:
    description: Column of O(outbox_table) that is null while an event is unpublished.
    type: str
    default: published_at
"""
