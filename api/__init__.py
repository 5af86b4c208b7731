"""autopgo's HTTP API: upload, download, list and delete profiles, and health checks.

A thin layer over ``profiling``: it parses and validates requests, stages
uploads in the blob store and emits events, on ``http.server`` alone (no web
framework), so the process stays small and starts fast. Modules, one concern
each:

``config``       the server's settings (plain data) and the parsing of their textual forms
``errors``       ``ApiError``: an HTTP status and the one-line message sent as JSON
``messages``     ``Request`` and ``Response``: what handlers take and give back
``routing``      which handler and which app a method and path name
``auth``         the optional bearer token for writes
``limits``       reading a request body within its size limit
``validation``   which uploads are accepted, and the form they are stored in
``workers``      running that validation in worker processes
``conditional``  dates, ``If-None-Match`` and ``If-Modified-Since`` for downloads
``versions``     a value per app and merged profile version (its ETag, say), bounded
``trimcache``    PGO-trimmed downloads, kept per merged profile version
``sinks``        the log event sink and the choice between it and Prefect's
``handlers``     what each endpoint does, and the route table
``connections``  which connections are idle, for a graceful shutdown
``server``       the socket side: threads, access log, running until SIGTERM
"""
