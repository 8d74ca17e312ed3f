//! `llmeff help`: the scripting reference (engine/src/reference.rs, from the vocabulary of
//! engine/src/vocabulary.rs) in the terminal, and the commands' own help.

use clap::CommandFactory;
use std::process::ExitCode;

use crate::Failure;
use crate::cli::{Cli, HelpArgs};
use engine::{reference, vocabulary};

/// Prints the topic list, one topic, a command's help, the Markdown reference or the Rhai
/// definitions.
pub fn run(args: HelpArgs) -> Result<ExitCode, Failure> {
    if args.markdown {
        print!("{}", reference::markdown());
        return Ok(ExitCode::SUCCESS);
    }
    if args.definitions {
        print!("{}", reference::definitions());
        return Ok(ExitCode::SUCCESS);
    }
    let mut cli = Cli::command();
    let commands: Vec<String> = cli
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    let Some(topic) = args.topic else {
        print!("{}", reference::index_text());
        println!(
            "\nCommands: {} (`llmeff help COMMAND` shows one's options).",
            commands.join(", ")
        );
        return Ok(ExitCode::SUCCESS);
    };
    if let Some(t) = vocabulary::topic(&topic) {
        print!("{}", reference::topic_text(t));
        return Ok(ExitCode::SUCCESS);
    }
    if commands.contains(&topic)
        && let Some(command) = cli.find_subcommand_mut(&topic)
    {
        let help = command.render_long_help();
        // The subcommand renders its usage without the binary's name.
        print!(
            "{}",
            help.to_string().replacen(
                &format!("Usage: {topic}"),
                &format!("Usage: llmeff {topic}"),
                1
            )
        );
        return Ok(ExitCode::SUCCESS);
    }
    let suggestion = engine::suggest::closest(
        &topic,
        vocabulary::topic_names()
            .into_iter()
            .chain(commands.iter().map(String::as_str)),
    )
    .map(|s| format!("did you mean `{s}`? "))
    .unwrap_or_default();
    Err(Failure::input(format!(
        "no help topic `{topic}`; {suggestion}topics: {}; commands: {}",
        vocabulary::topic_names().join(", "),
        commands.join(", ")
    )))
}
