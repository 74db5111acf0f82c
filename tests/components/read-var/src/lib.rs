//! `GET /var/NAME` reads a variable through `fermyon:spin/variables`;
//! `?via=config` reads it through `wasi:config/store` instead, and
//! `GET /var?via=config` lists all of them.
use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;
use spin_sdk::variables;
use spin_sdk::wit::wasi::config::store as config;

#[http_component]
fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let name = req
        .header("spin-path-info")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .trim_start_matches('/')
        .to_string();
    let via_config = req.query().contains("via=config");
    Ok(match (via_config, name.is_empty()) {
        (true, true) => match config::get_all() {
            Ok(all) => {
                let mut all: Vec<String> =
                    all.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
                all.sort();
                Response::new(200, all.join("\n"))
            }
            Err(e) => Response::new(500, format!("{e:?}")),
        },
        (true, false) => match config::get(&name) {
            Ok(Some(value)) => Response::new(200, value),
            Ok(None) => Response::new(404, "none"),
            Err(e) => Response::new(500, format!("{e:?}")),
        },
        (false, _) => match variables::get(&name) {
            Ok(value) => Response::new(200, value),
            Err(variables::Error::Undefined(m)) => Response::new(404, format!("undefined: {m}")),
            Err(variables::Error::InvalidName(m)) => {
                Response::new(400, format!("invalid-name: {m}"))
            }
            Err(e) => Response::new(500, format!("{e:?}")),
        },
    })
}
