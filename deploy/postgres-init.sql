-- One database per service: no service reads another's tables.
CREATE DATABASE traffic_intake OWNER funnel;
CREATE DATABASE lead_scoring OWNER funnel;
CREATE DATABASE member_retargeting OWNER funnel;
