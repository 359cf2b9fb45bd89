//! `standin`: a local stand-in for the legacy Nearby Search service, so WHATSAT can be
//! measured without the internet. Plain HTTP/1.1 with keep-alive; every request, whatever
//! its path or query, gets the same 20-result page in the legacy shape (SPEC §6).

use async_net::{TcpListener, TcpStream};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use serde_json::{json, Value};
use smol::{LocalExecutor, Timer};
use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

/// Places in each answer: the most a legacy Nearby Search page holds, and the most a
/// WHATSAT may ask for.
pub const RESULTS: usize = 20;

/// Longest request head accepted; the herd's requests are a few hundred bytes.
pub const MAX_HEAD: usize = 16 * 1024;

/// Largest request body read and discarded (a POST to a mistaken URL).
pub const MAX_BODY: usize = 1 << 20;

/// How long a kept-alive connection may sit idle before it is closed; the herd's HTTP
/// client reuses connections within seconds or not at all.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Connections served at once; past this new ones are closed at once.
pub const MAX_CONNECTIONS: usize = 1024;

/// Longest a stand-in may run, so a forgotten one stops by itself.
pub const MAX_SECS: u64 = 24 * 3600;

/// Runs the stand-in on `addr` for at most `secs` seconds; returns how many requests it
/// answered.
pub fn run(addr: &str, secs: u64) -> Result<u64, String> {
    let secs = secs.clamp(1, MAX_SECS);
    let body: Rc<[u8]> = page().into_bytes().into();
    let ex = LocalExecutor::new();
    smol::block_on(ex.run(async {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        println!(
            "standin: legacy Nearby Search with {RESULTS} results ({} bytes) on http://{local}/json for at most {secs} s",
            body.len()
        );
        let served = Rc::new(Cell::new(0u64));
        let open = Rc::new(Cell::new(0usize));
        future::or(
            async {
                loop {
                    let (stream, _) = match listener.accept().await {
                        Ok(s) => s,
                        Err(e) => {
                            eprintln!("standin: accept failed: {e}");
                            // Out of descriptors, most likely: wait instead of spinning.
                            Timer::after(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    if open.get() >= MAX_CONNECTIONS {
                        continue; // dropping the stream closes it
                    }
                    let _ = stream.set_nodelay(true);
                    let (body, served, open) = (body.clone(), served.clone(), open.clone());
                    open.set(open.get() + 1);
                    ex.spawn(async move {
                        if let Err(e) = serve(stream, &body, &served).await {
                            if e.kind() != io::ErrorKind::UnexpectedEof {
                                eprintln!("standin: connection failed: {e}");
                            }
                        }
                        open.set(open.get() - 1);
                    })
                    .detach();
                }
            },
            async {
                Timer::after(Duration::from_secs(secs)).await;
            },
        )
        .await;
        Ok(served.get())
    }))
}

/// Answers requests on one connection until the client closes it, asks to close, or
/// idles past `IDLE_TIMEOUT`.
async fn serve(mut stream: TcpStream, body: &[u8], served: &Cell<u64>) -> io::Result<()> {
    let head_of_response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=UTF-8\r\nContent-Length: {}\r\n",
        body.len()
    );
    let mut buf = vec![0u8; 4096];
    let mut end = 0;
    loop {
        let head_end = loop {
            if let Some(i) = buf[..end].windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if end == MAX_HEAD {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "request head too long",
                ));
            }
            if end == buf.len() {
                buf.resize((buf.len() * 2).min(MAX_HEAD), 0);
            }
            let n = crate::wire::timeout(
                IDLE_TIMEOUT,
                "idle connection",
                stream.read(&mut buf[end..]),
            )
            .await?;
            if n == 0 {
                return if end == 0 {
                    Ok(())
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "request cut short",
                    ))
                };
            }
            end += n;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or("");
        let mut close = request_line.ends_with("HTTP/1.0");
        let mut content_length = 0usize;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.parse().map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length")
                })?;
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        if content_length > MAX_BODY {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request body too large",
            ));
        }
        // Drop the head and the body; keep whatever follows (a pipelined request).
        let buffered = end - head_end;
        if buffered >= content_length {
            buf.copy_within(head_end + content_length..end, 0);
            end = buffered - content_length;
        } else {
            end = 0;
            let mut left = content_length - buffered;
            let mut sink = [0u8; 4096];
            while left > 0 {
                let want = left.min(sink.len());
                let n = crate::wire::timeout(
                    IDLE_TIMEOUT,
                    "request body",
                    stream.read(&mut sink[..want]),
                )
                .await?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "request body cut short",
                    ));
                }
                left -= n;
            }
        }

        let mut response = Vec::with_capacity(head_of_response.len() + 32 + body.len());
        response.extend_from_slice(head_of_response.as_bytes());
        if close {
            response.extend_from_slice(b"Connection: close\r\n");
        }
        response.extend_from_slice(b"\r\n");
        response.extend_from_slice(body);
        crate::wire::timeout(
            IDLE_TIMEOUT,
            "writing a response",
            stream.write_all(&response),
        )
        .await?;
        served.set(served.get() + 1);
        if close {
            return Ok(());
        }
    }
}

/// The page every request gets: `RESULTS` places around UCLA with the fields a real
/// legacy answer carries, so the herd parses, cuts and renders a realistic amount.
fn page() -> String {
    let results: Vec<Value> = (0..RESULTS)
        .map(|i| {
            let (lat, lng) = (34.068930 + i as f64 * 0.0007, -118.445127 + i as f64 * 0.0005);
            let id = format!("ChIJbench{i:04}AAAAAAAAAAAAAAAAAAAAAAAAAA");
            json!({
                "business_status": "OPERATIONAL",
                "geometry": {
                    "location": {"lat": lat, "lng": lng},
                    "viewport": {
                        "northeast": {"lat": lat + 0.0013, "lng": lng + 0.0013},
                        "southwest": {"lat": lat - 0.0013, "lng": lng - 0.0013}
                    }
                },
                "icon": "https://maps.gstatic.com/mapfiles/place_api/icons/v1/png_71/generic_business-71.png",
                "icon_background_color": "#7B9EB0",
                "icon_mask_base_uri": "https://maps.gstatic.com/mapfiles/place_api/icons/v2/generic_pinlet",
                "name": format!("Bench Place {i}"),
                "opening_hours": {"open_now": i % 3 != 0},
                "photos": [{
                    "height": 3024,
                    "html_attributions": [format!("<a href=\"https://maps.google.com/maps/contrib/{i}\">Bench Photographer</a>")],
                    "photo_reference": format!("AUc7tXW{}", "bench".repeat(40)),
                    "width": 4032
                }],
                "place_id": id,
                "plus_code": {"compound_code": "3H9V+HX Los Angeles, California", "global_code": "85633H9V+HX"},
                "rating": 4.0 + (i % 10) as f64 / 10.0,
                "reference": id,
                "scope": "GOOGLE",
                "types": ["restaurant", "food", "point_of_interest", "establishment"],
                "user_ratings_total": 100 + i * 7,
                "vicinity": format!("{} Westwood Plaza, Los Angeles", 100 + i)
            })
        })
        .collect();
    json!({"html_attributions": [], "results": results, "status": "OK"}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_the_legacy_shape() {
        let v: Value = serde_json::from_str(&page()).unwrap();
        assert_eq!(v["status"], "OK");
        assert_eq!(v["results"].as_array().unwrap().len(), RESULTS);
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["html_attributions", "results", "status"]);
    }
}
