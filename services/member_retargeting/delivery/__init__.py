"""Campaign delivery: the dispatcher process and what it sends.

``python -m services.member_retargeting dispatch`` consumes the dispatch topic into its
own store of deliveries (:mod:`.queue`), then sends each once (:mod:`.dispatcher`):
e-mail over SMTP (:mod:`.smtp`, messages built by :mod:`.message`), signed webhooks for
webhook, SMS and WhatsApp providers (:mod:`.webhook`), within per-channel rate limits that
slow a failing provider down (:mod:`.pacing`). What happened to each dispatch is published
on the delivery topic (:mod:`.status`) and read back into campaign reports; SMS and
WhatsApp providers' receipts come back through the web app (:mod:`.receipts`). The links a
message carries — unsubscribe, tracked clicks, the open pixel — are signed
(:mod:`.links`) and land on the public endpoints of :mod:`..web.public`.
"""
