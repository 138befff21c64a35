//! The `--box` and `--point` flags: comma-separated numbers typed by the
//! user, parsed into the library's prompt types (`UserBox`, `UserPoint`),
//! keeping the text as typed for error messages.

use segvol::pipeline::prompt_frames::{UserBox, UserPoint};
use segvol::Error;

type Result<T> = std::result::Result<T, Error>;

fn numbers(s: &str, what: &str) -> Result<Vec<f64>> {
    s.split(',')
        .map(|t| {
            let v: f64 = t.trim().parse().map_err(|_| {
                Error::prompt(format!("{what} {s}"), format!("{t:?} is not a number"))
            })?;
            if v.is_finite() {
                Ok(v)
            } else {
                Err(Error::prompt(
                    format!("{what} {s}"),
                    "coordinates must be finite",
                ))
            }
        })
        .collect()
}

/// `--box i0,j0,k0,i1,j1,k1`.
pub fn parse_box(s: &str) -> Result<UserBox> {
    let v = numbers(s, "--box")?;
    if v.len() != 6 {
        return Err(Error::prompt(
            format!("--box {s}"),
            format!("needs 6 numbers (i0,j0,k0,i1,j1,k1), got {}", v.len()),
        ));
    }
    Ok(UserBox {
        corners: [v[0], v[1], v[2], v[3], v[4], v[5]],
        text: s.to_string(),
    })
}

/// `--point i,j,k[,label]`, label 1 (positive, the default) or 0.
pub fn parse_point(s: &str) -> Result<UserPoint> {
    let v = numbers(s, "--point")?;
    let label = match v.len() {
        3 => 1.0,
        4 if v[3] == 1.0 || v[3] == 0.0 => v[3] as f32,
        4 => {
            return Err(Error::prompt(
                format!("--point {s}"),
                format!("label {} is not 1 (positive) or 0 (negative)", v[3]),
            ))
        }
        n => {
            return Err(Error::prompt(
                format!("--point {s}"),
                format!("needs 3 coordinates and an optional label, got {n} numbers"),
            ))
        }
    };
    Ok(UserPoint {
        at: [v[0], v[1], v[2]],
        label,
        text: s.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing() {
        assert_eq!(parse_point("1,2,3").unwrap().label, 1.0);
        assert_eq!(parse_point("1,2,3,0").unwrap().label, 0.0);
        assert_eq!(parse_point(" 1, 2.5,3").unwrap().at, [1.0, 2.5, 3.0]);
        assert!(parse_point("1,2,3,2")
            .unwrap_err()
            .to_string()
            .contains("label 2"));
        assert!(parse_point("1,2").is_err());
        assert!(parse_box("1,2,3,4,5")
            .unwrap_err()
            .to_string()
            .contains("6 numbers"));
        assert!(parse_box("1,2,x,4,5,6")
            .unwrap_err()
            .to_string()
            .contains("not a number"));
        assert!(parse_box("1,2,nan,4,5,6").is_err());
        let b = parse_box("-1,2,3,4,5,6").unwrap();
        assert_eq!(b.corners, [-1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(b.text, "-1,2,3,4,5,6");
    }
}
