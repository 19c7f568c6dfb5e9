"""Globus Compute's own ``Executor``: fits sent through the Globus cloud to a running endpoint."""

from __future__ import annotations

import concurrent.futures as cf
import uuid

from faasctl.exceptions import EndpointUnhealthy, SiteConfigError

__all__ = ["globus_executor"]


def globus_executor(endpoint_id: str) -> cf.Executor:
    """Globus Compute's ``Executor`` for ``endpoint_id``, refusing to prompt for a login.

    Raises:
        SiteConfigError: ``endpoint_id`` is not a UUID, or there are no Globus credentials
            (a health check must not wait for someone to log in).
        EndpointUnhealthy: the Globus Compute service cannot be reached.
    """
    try:
        uuid.UUID(endpoint_id)
    except ValueError as err:
        raise SiteConfigError(f"--endpoint {endpoint_id!r}: not an endpoint UUID") from err
    import globus_sdk
    from globus_compute_sdk import Client, Executor
    from globus_compute_sdk.sdk.auth.globus_app import get_globus_app

    try:
        app = get_globus_app()
        if app.login_required():
            raise SiteConfigError(
                f"endpoint {endpoint_id}: not logged in to Globus; run 'globus-compute-endpoint login' once, or "
                "for cron and CI set GLOBUS_COMPUTE_CLIENT_ID and GLOBUS_COMPUTE_CLIENT_SECRET (a client identity)"
            )
        client = Client(app=app)
    except (globus_sdk.GlobusError, ValueError) as err:
        raise EndpointUnhealthy(
            f"endpoint {endpoint_id}: cannot reach the Globus Compute service ({type(err).__name__}: {err}); "
            "check the network and the credentials"
        ) from err
    return Executor(endpoint_id=endpoint_id, client=client)
