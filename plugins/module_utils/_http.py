# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""HTTP for vpsops.deploy: the opener the probes, NATS and the SLO gate share (the redaction of
URLs is _secrets'). The ground floor of the shared code: standard library only, it imports
nothing of the collection. Private to this collection."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ssl

from urllib.request import HTTPErrorProcessor, HTTPSHandler, build_opener


class NoRaise(HTTPErrorProcessor):
    """Hand every status back to the caller instead of raising on 4xx/5xx."""

    def http_response(self, request, response):
        return response

    https_response = http_response


def http_opener(https, validate_certs):
    """An opener that returns every status; a TLS context (costly: it loads the CA store) only for
    https. Openers hold no per-request state, so the probes of one call share them."""
    if not https:
        return build_opener(NoRaise)
    context = ssl.create_default_context()
    if not validate_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return build_opener(HTTPSHandler(context=context), NoRaise)
