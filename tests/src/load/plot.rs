//! Pictures: one PNG line chart per series over time (plotters' bitmap backend). Labels use a
//! TrueType font found on the system (DejaVu or Liberation); without one the charts are drawn
//! without text, and the file names say what they show.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

/// One line of a chart: a name and `(minutes, value)` points.
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A chart to draw.
pub struct Chart {
    /// File stem, also the title.
    pub name: String,
    pub unit: String,
    pub lines: Vec<Line>,
}

const FONT_CANDIDATES: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Registers a system font once; whether text can be drawn.
fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        for path in FONT_CANDIDATES {
            if let Ok(bytes) = std::fs::read(path) {
                // Registered fonts must live for the whole program.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// Draws `chart` into `dir/<name>.png`; returns the path.
pub fn draw(dir: &Path, chart: &Chart) -> Result<PathBuf> {
    let path = dir.join(format!("{}.png", chart.name));
    let text = font_ready();
    let pts = chart.lines.iter().flat_map(|l| l.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in pts {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    let y0 = y0.min(0.0);
    let y1 = if y1 - y0 < 1e-9 { y0 + 1.0 } else { y1 * 1.05 };
    let file = path.clone();
    let root = BitMapBackend::new(&file, (900, 420)).into_drawing_area();
    let err = |e: DrawingAreaErrorKind<_>| anyhow!("drawing {}: {e:?}", chart.name);
    root.fill(&WHITE).map_err(err)?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(12);
    if text {
        builder
            .caption(
                format!("{} ({})", chart.name, chart.unit),
                ("sans-serif", 20),
            )
            .x_label_area_size(36)
            .y_label_area_size(70);
    }
    let mut ctx = builder
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| anyhow!("chart {}: {e:?}", chart.name))?;
    let mut mesh = ctx.configure_mesh();
    mesh.light_line_style(RGBColor(235, 235, 235));
    if text {
        mesh.x_desc("minutes").label_style(("sans-serif", 13));
    } else {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw()
        .map_err(|e| anyhow!("mesh {}: {e:?}", chart.name))?;
    for (i, line) in chart.lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let series = ctx
            .draw_series(LineSeries::new(
                line.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| anyhow!("series {}: {e:?}", chart.name))?;
        if text {
            series
                .label(line.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
    }
    if text && chart.lines.len() > 1 {
        ctx.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(|e| anyhow!("legend {}: {e:?}", chart.name))?;
    }
    root.present().map_err(err)?;
    Ok(path)
}
