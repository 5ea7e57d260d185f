from testing.twilio_server.cli import main

main()
