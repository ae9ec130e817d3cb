"""What every sink that speaks HTTP shares (Vector's split): the config every HTTP sink has
(`config`), the transport that only moves bytes and says how the receiver answered (`service`),
the sink that turns events into requests through a preset's request builder (`sink`), and
Standard Webhooks signing (`signing`). A preset (webhook, Slack, Teams, PagerDuty) is a config
model plus a request builder; none of them touches a socket."""
