"""The reservation actor behind a CSMS: OCPP 2.0.1 and 1.6 handlers for the
`ocpp` library's charge points, and the runnable charge point `reservation-ocpp`.

    mapping   every word spelt differently on the two sides, as tables
    bridge    ReservationBridge (the actor's client and watcher) and the report task
    v201      ReservationHandlers for ocpp.v201.ChargePoint
    v16       ReservationHandlers for ocpp.v16.ChargePoint
    station   the runnable charge point: connect, boot, serve, reconnect
    cli       the console script

Needs the `ocpp` extra (`pip install 'reservation-actor[ocpp]'`).
"""
