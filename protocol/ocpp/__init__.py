"""The reservation actor behind a CSMS: OCPP 2.0.1 and 1.6 handlers for the
`ocpp` library's charge points, and the runnable charge point `reservation-ocpp`.

    mapping   every word spelt differently on the two sides, as tables
    bridge    ReservationBridge (the actor's client and watcher) and the report task
    v201      ReservationHandlers for ocpp.v201.ChargePoint
    v16       ReservationHandlers for ocpp.v16.ChargePoint
    station   the runnable charge point: connect, boot, serve, reconnect
    cli       the console script
    csms      a demo CSMS to try the bridge with (python -m protocol.ocpp.csms)

Needs the `ocpp` extra (`pip install 'reservation-actor[ocpp]'`).
"""

# Light on purpose: the console script checks its command line with these
# before it imports the `ocpp` library, which takes a second.
OCPP_201 = "2.0.1"
OCPP_16 = "1.6"
# What BootNotification says the station is unless the operator says otherwise.
DEFAULT_VENDOR = "reservation-actor"
DEFAULT_MODEL = "reservation-ocpp"
DEFAULT_ACTOR_TIMEOUT = 3.0   # seconds; well inside the 30 s or so a CSMS waits for an answer
