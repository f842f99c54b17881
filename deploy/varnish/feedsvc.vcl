# Varnish in front of feedsvc, purged by surrogate key (varnish-modules' xkey).
#
# Install (Debian: apt-get install varnish varnish-modules): copy to
# /etc/varnish/default.vcl (or point varnishd's -f at it), set the backend to
# gunicorn's FEEDSVC_BIND, restart varnish, and run feedsvc with
# FEEDSVC_PURGE=varnish:http://127.0.0.1:6081 (varnishd's -a address).
#
# What it does:
# - caches what feedsvc says may be cached, for s-maxage (a day when purging
#   is on) and nothing without Cache-Control (errors, /healthz);
# - tags every object with the keys of feedsvc's Surrogate-Key header, and
#   drops every object of a key when feedsvc sends
#   `PURGE /` with `xkey-purge: <keys>` from this host, after each change;
# - keeps feedsvc's own gzip bytes and ETags: Accept-Encoding is folded to
#   gzip or nothing and sent to feedsvc as the client sent it, so Varnish never
#   compresses or decompresses (which would weaken the ETag);
# - folds Accept to "browser" or "reader" as deploy/nginx/feedsvc.conf does,
#   so a feed URL has two cached variants (feed, HTML preview), not one per
#   browser's spelling; both folded values are in the cache key (vcl_hash), as
#   in nginx's, and clients still get feedsvc's Vary.
#
# tests/test_purge_servers.py runs this very file: it replaces the lines
# marked "test: replaced" (the backend address).

vcl 4.1;

import xkey;

backend feedsvc {
    .host = "127.0.0.1";  # test: replaced
    .port = "8000";  # test: replaced
}

acl purgers {
    "127.0.0.1";
    "::1";
}

sub vcl_recv {
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(403, "Forbidden"));
        }
        if (req.http.xkey-purge) {
            set req.http.n-gone = xkey.purge(req.http.xkey-purge);
            return (synth(200, "Purged " + req.http.n-gone));
        }
        return (purge);
    }
    if (req.url == "/metrics" && client.ip !~ purgers) {
        return (synth(403, "Forbidden"));
    }
    # gzip;q=0 means "not gzip"; every other spelling of gzip is "gzip".
    unset req.http.X-Feedsvc-Gzip;
    if (req.http.Accept-Encoding ~ "(?i)(^|,)\s*gzip\s*;\s*q=0(\.0*)?\s*(,|$)") {
        unset req.http.Accept-Encoding;
    } elsif (req.http.Accept-Encoding ~ "(?i)(^|,)\s*(x-)?gzip\s*(;|,|$)") {
        set req.http.Accept-Encoding = "gzip";
        set req.http.X-Feedsvc-Gzip = "gzip";
    } else {
        unset req.http.Accept-Encoding;
    }
    # What feedsvc.http.wants_preview decides: a browser names text/html and no feed type.
    if (req.http.Accept ~ "(?i)(atom|rss)\+xml|feed\+json") {
        set req.http.Accept = "*/*";
    } elsif (req.http.Accept ~ "(?i)(^|,)\s*text/html\s*;\s*q=0(\.0*)?\s*(,|$)") {
        set req.http.Accept = "*/*";
    } elsif (req.http.Accept ~ "(?i)(^|,)\s*text/html\s*(;|,|$)") {
        set req.http.Accept = "text/html";
    } else {
        set req.http.Accept = "*/*";
    }
    if (req.method != "GET" && req.method != "HEAD") {
        return (pass);
    }
    return (hash);
}

# The cache key, as nginx's: URL, host, gzip or not, browser or reader. Varnish's
# own Vary matching is not used for these (it would record the Accept-Encoding
# Varnish asks the backend with, not the client's), so Vary is set aside below.
sub vcl_hash {
    hash_data(req.url);
    hash_data(req.http.host);
    hash_data(req.http.X-Feedsvc-Gzip);
    hash_data(req.http.Accept);
    return (lookup);
}

sub vcl_backend_fetch {
    # Varnish asks backends for gzip whatever the client takes: ask for what it took.
    if (bereq.http.X-Feedsvc-Gzip == "gzip") {
        set bereq.http.Accept-Encoding = "gzip";
    } else {
        unset bereq.http.Accept-Encoding;
    }
    unset bereq.http.X-Feedsvc-Gzip;
}

sub vcl_backend_response {
    if (!beresp.http.Cache-Control) {
        # As nginx here: nothing without feedsvc's Cache-Control is cached.
        set beresp.uncacheable = true;
        set beresp.ttl = 0s;
        return (deliver);
    }
    if (beresp.http.Surrogate-Key) {
        set beresp.http.xkey = beresp.http.Surrogate-Key;
    }
    if (beresp.http.Vary) {  # in the hash already; given back to clients in vcl_deliver
        set beresp.http.X-Feedsvc-Vary = beresp.http.Vary;
        unset beresp.http.Vary;
    }
    # Once stale, serve the old copy while one request revalidates it (ETag).
    set beresp.grace = 1h;
    set beresp.keep = 1d;
}

sub vcl_deliver {
    unset resp.http.xkey;
    if (resp.http.X-Feedsvc-Vary) {
        set resp.http.Vary = resp.http.X-Feedsvc-Vary;
        unset resp.http.X-Feedsvc-Vary;
    }
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
}
