"""NVFlare confidential-computing plugin over ``sealroom.federation`` (ADR 0029).

``SealroomAuthorizer`` implements NVFlare's ``CCAuthorizer`` (``get_namespace``,
``generate``, ``verify``); ``SealroomCCManager`` is NVFlare's ``CCManager`` with a failure
policy instead of a federation shutdown. Needs the ``nvflare`` extra
(``pip install 'sealroom[nvflare]'``).
"""

from sealroom.integrations.nvflare.authorizer import NAMESPACE, SealroomAuthorizer, Verdict
from sealroom.integrations.nvflare.manager import SealroomCCManager

__all__ = ["NAMESPACE", "SealroomAuthorizer", "SealroomCCManager", "Verdict"]
