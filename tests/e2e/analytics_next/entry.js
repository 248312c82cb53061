// What the test page loads: Segment's browser SDK, as a site would bundle it.
import { AnalyticsBrowser } from "@segment/analytics-next";
window.AnalyticsBrowser = AnalyticsBrowser;
