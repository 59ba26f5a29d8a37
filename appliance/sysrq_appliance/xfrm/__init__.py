"""IPsec SAs and policies over NETLINK_XFRM, the way `ip xfrm` manages them, in three layers:

    values    State, Policy, Selector, Template, Algorithm: plain typed values that read
              like `ip xfrm` (and render as its commands); no kernel, no pyroute2
    messages  the kernel's structures: requests encoded on pyroute2's netlink framework,
              replies decoded with struct (pure)
    netlink   XfrmSocket, a pyroute2 NetlinkSocket: one method per kernel verb, checks that
              what it changes is ours, and sends many requests per sendmsg when asked

Everything a caller needs is importable from here.
"""

from .messages import (ANY_ALGORITHM, XFRM_INF, XFRM_MODE_TUNNEL, XFRM_MSG_DELPOLICY,
                       XFRM_MSG_DELSA, XFRM_MSG_GETPOLICY, XFRM_MSG_GETSA, XFRM_MSG_NEWPOLICY,
                       XFRM_MSG_NEWSA, XFRM_MSG_UPDPOLICY, XFRM_MSG_UPDSA, XFRMA_ALG_AEAD,
                       XFRMA_ALG_AUTH, XFRMA_ALG_AUTH_TRUNC, XFRMA_ALG_CRYPT, XFRMA_IF_ID,
                       XFRMA_MARK, XFRMA_POLICY_TYPE, XFRMA_REPLAY_VAL, XFRMA_SRCADDR,
                       XFRMA_TMPL, _xfrm_msg, decode_policy, decode_state, split_messages,
                       policy_id_msg, policy_msg, request_bytes, socket_policy_bytes,
                       state_id_msg, state_msg, xfrm_userpolicy_id, xfrm_userpolicy_info,
                       xfrm_usersa_id, xfrm_usersa_info)
from .netlink import (ESP_ERRNOS, EspUnsupported, XfrmError, XfrmExists, XfrmNotFound,
                     XfrmSocket, parse_acks)
from .values import (DIRECTIONS, IPPROTO_ESP, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_UDP,
                     REPLAY_WINDOW, REQID_BASE, REQID_MASK, Algorithm, Policy, Selector, State,
                     StateCounters, Template, ip_policy_command, ip_state_command, is_ours)
