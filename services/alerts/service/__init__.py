"""Alert lifecycle, by domain: signal -> alert, new or merged into an open one (`signals`);
review or approval by policy (`policy`, `review`); one delivery per subscriber (`fanout`);
provider status callbacks (`statuses`); texts other services ask for (`requests`);
`common` holds the texts, approval and audit they share.

Functions take a session and never commit: the caller's unit of work does. Callers import
a name from the module that defines it.
"""
