"""The admin API for security staff: the review queue, lockouts on every instance at once,
an employee's activity and the audit search, all behind the same token verification as
lookups plus the policy's admin role, every call audited.

``routes`` (handlers and the route table), ``policy`` (the policy and its hot reload),
``inputs`` (strict parsing of what staff send), ``search`` (the audit archive, reached from
one place), ``openapi`` (the document at ``/admin/openapi.json``, checked against the route
table by the tests).
"""

from lookup_proxy.admin.routes import ROUTES, add_admin_routes, admin_employee

__all__ = ["ROUTES", "add_admin_routes", "admin_employee"]
